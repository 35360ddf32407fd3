import Foundation
import XCTest
import Tokenizers
import TestSupport

/// The chat page at `GET /` of the real `trainer serve` binary (golden test model + MiniMind's tokenizer), driven
/// in headless Chromium through `Browser` (TestSupport). Skipped, with the reason, when chromium or chromedriver is
/// missing. Screenshots of each state go to `TestArtifacts.directory` (`$SWIFTMIND_TEST_ARTIFACTS`, else
/// `.build/test-artifacts/`).
final class ChatPageTests: XCTestCase {
    /// A `trainer serve` child on a free port; `stop()` (or deinit) sends SIGTERM and waits for it.
    final class ServeProcess {
        let process = Process()
        let port: Int
        private let stderrText: Locked<String>

        final class Locked<T>: @unchecked Sendable {
            private let lock = NSLock(); private var value: T
            init(_ v: T) { value = v }
            func with<R>(_ f: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return f(&value) }
        }

        init(_ extra: [String] = []) throws {
            process.executableURL = try trainerBinary()
            process.arguments = ["serve", "--model", golden("generate_model"), "--tokenizer", minimindTokenizer(),
                                 "--port", "0", "--threads", "1"] + extra
            var env = ProcessInfo.processInfo.environment
            env["OPENBLAS_NUM_THREADS"] = "1"
            process.environment = env
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            let err = Pipe()
            process.standardError = err
            let text = Locked("")
            stderrText = text
            err.fileHandleForReading.readabilityHandler = { h in
                let d = h.availableData
                if d.isEmpty { h.readabilityHandler = nil; return }
                text.with { $0 += String(decoding: d, as: UTF8.self) }
            }
            try process.run()
            // "[serve] model NAME on http://127.0.0.1:PORT (…)" once the socket is bound.
            let deadline = Date().addingTimeInterval(60)
            var found: Int?
            while found == nil && Date() < deadline && process.isRunning {
                found = text.with { s in
                    s.range(of: "http://127.0.0.1:").flatMap { r in Int(s[r.upperBound...].prefix { $0.isNumber }) }
                }
                if found == nil { usleep(20_000) }
            }
            guard let p = found else {
                if process.isRunning { process.terminate() }
                process.waitUntilExit()
                throw HTTPFailure(description: "trainer serve did not start: \(text.with { $0 })")
            }
            port = p
        }

        var log: String { stderrText.with { $0 } }

        /// GET /health as a JSON object.
        func health() throws -> [String: Any] {
            let (s, _, b) = try RawHTTP.request(port: port, "GET", "/health")
            guard s == 200 else { throw HTTPFailure(description: "/health answered \(s)") }
            return try json(b)
        }

        func stop() {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        deinit { stop() }
    }

    func launchBrowser() throws -> Browser {
        do { return try Browser.launch(windowWidth: 1200, height: 800) } catch let e as BrowserUnavailable { throw XCTSkip(e.reason) }
    }

    func shot(_ b: Browser, _ name: String) throws {
        let p = TestArtifacts.path("chat-\(name).png")
        try b.screenshot(to: p)
        let size = (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0
        XCTAssertGreaterThan(size ?? 0, 1000, "screenshot \(p)")
    }

    /// Sets a slider as dragging it would (its value, then the `input` event the page listens to).
    func setSlider(_ b: Browser, _ id: String, _ value: Int) throws {
        try b.execute("const e = document.getElementById(arguments[0]); e.value = String(arguments[1]); e.dispatchEvent(new Event('input')); return e.value",
                      args: [id, value])
        XCTAssertEqual(try b.text("#\(id)_out"), String(value))
    }

    /// Length and `data-state` of the last reply, and the disabled flags of #send and #stop.
    func replyState(_ b: Browser) throws -> (length: Int, state: String, sendDisabled: Bool, stopDisabled: Bool) {
        let v = try b.execute("""
            const r = Array.from(document.querySelectorAll('#messages .assistant')).pop();
            return [r ? r.textContent.length : -1, r ? r.dataset.state : '', document.getElementById('send').disabled,
                    document.getElementById('stop').disabled];
            """) as? [Any] ?? []
        return ((v.first as? Int) ?? -1, (v.count > 1 ? v[1] as? String : nil) ?? "", (v.count > 2 ? v[2] as? Bool : nil) ?? false,
                (v.count > 3 ? v[3] as? Bool : nil) ?? false)
    }

    func lastReplyText(_ b: Browser) throws -> String {
        try b.execute("return Array.from(document.querySelectorAll('#messages .assistant')).pop().textContent") as? String ?? ""
    }

    func open(_ b: Browser, _ server: ServeProcess) throws {
        try b.open("http://127.0.0.1:\(server.port)/")
        // The page asked /health for the model name and context length.
        try b.wait(timeout: 10, "the model name from /health") { try b.text("#model").contains("generate_model") }
    }

    /// Without a browser: `GET /` answers the page (HTML, its content-security policy, the stable ids) without the
    /// API key while the API still needs it; /health reports the context length the page's max_tokens slider uses.
    func testPageIsServedWithoutTheKeyWhileTheAPINeedsIt() throws {
        let server = try ServeProcess(["--api-key", "sk-right"])
        defer { server.stop() }
        let (s, h, body) = try RawHTTP.request(port: server.port, "GET", "/")
        XCTAssertEqual(s, 200)
        XCTAssertEqual(h["content-type"], "text/html; charset=utf-8")
        XCTAssertTrue(h["content-security-policy"]?.contains("connect-src 'self'") == true, "\(h)")
        let page = String(decoding: body, as: UTF8.self)
        for id in ["prompt", "send", "stop", "messages", "system", "temperature", "top_p", "max_tokens", "api_key"] {
            XCTAssertTrue(page.contains("id=\"\(id)\""), "the page has #\(id)")
        }
        XCTAssertFalse(page.contains("http://") || page.contains("https://") || page.contains("src=\""),
                       "no external resource: the page loads nothing but itself")
        let (ms, _, _) = try RawHTTP.request(port: server.port, "GET", "/v1/models")
        XCTAssertEqual(ms, 401)
        let (ps, _, _) = try RawHTTP.request(port: server.port, "POST", "/", body: Data("{}".utf8))
        XCTAssertEqual(ps, 401, "only GET / is open")
        let health = try server.health()
        XCTAssertEqual(health["context_length"] as? Int, 32768, "\(health)")
        XCTAssertEqual(health["active"] as? Int, 0, "\(health)")
    }

    /// A prompt typed into #prompt and sent with #send streams into an `.assistant` reply that grows (at least
    /// two different lengths seen while streaming) and ends (#stop disabled, #send enabled again). At temperature 0
    /// the reply is the golden greedy continuation of the golden prompt. `<think>` blocks render as <details>.
    func testReplyStreamsGrowsAndEnds() throws {
        let b = try launchBrowser()
        defer { b.quit() }
        let server = try ServeProcess()
        defer { server.stop() }
        try open(b, server)
        try shot(b, "empty")
        XCTAssertEqual(try b.execute("return document.getElementById('max_tokens').max") as? String, "32768",
                       "the max_tokens slider spans the model's context (/health context_length)")
        try setSlider(b, "temperature", 0)
        try setSlider(b, "max_tokens", 1000)
        XCTAssertEqual(try replyState(b).stopDisabled, true)
        // The page records the reply's length at every change while it streams (WebDriver's polls alone may be too
        // slow to catch a reply this small model writes in about a second).
        try b.execute("""
            window.replyLengths = [];
            new MutationObserver(() => {
              const r = Array.from(document.querySelectorAll('#messages .assistant')).pop();
              if (r && r.dataset.state === 'streaming') window.replyLengths.push(r.textContent.length);
            }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
            """)

        try b.type("#prompt", goldenUserMessage)
        try b.click("#send")
        var polled = Set<Int>()
        var midShot = false
        var last = try replyState(b)
        try b.wait(timeout: 60, "the reply to finish streaming") {
            last = try replyState(b)
            if last.state == "streaming" {
                XCTAssertTrue(last.sendDisabled, "#send is disabled while a reply streams")
                XCTAssertFalse(last.stopDisabled, "#stop is enabled while a reply streams")
                if last.length > 0 { polled.insert(last.length) }
                if last.length > 0 && !midShot { midShot = true; try shot(b, "streaming") }
            }
            return last.state != "streaming" && last.state != ""
        }
        let recorded = Set((try b.execute("return window.replyLengths") as? [Int] ?? []).filter { $0 > 0 })
        XCTAssertGreaterThanOrEqual(recorded.union(polled).count, 2,
                                    "the reply was seen growing while it streamed (page: \(recorded.sorted().prefix(20)), polls: \(polled.sorted()))")
        XCTAssertEqual(last.state, "done")
        XCTAssertFalse(last.sendDisabled, "#send enabled again")
        XCTAssertTrue(last.stopDisabled, "#stop disabled again")
        XCTAssertEqual(try b.count("#messages .user"), 1)
        XCTAssertEqual(try b.text("#messages .user"), goldenUserMessage)
        XCTAssertEqual(try b.count("#messages .assistant"), 1)
        let reply = try lastReplyText(b)
        let tokenizer = try Tokenizer.load(minimindTokenizer())
        let golden = try tokenizer.decode(try loadGoldenGenerate().greedy_ids, skipSpecialTokens: true)
        XCTAssertTrue(reply.hasPrefix(golden), "greedy reply starts with the golden continuation:\n\(reply)\n---\n\(golden)")
        // Greedy decoding of this model does not meet the eos within 1000 tokens: the server's usage count.
        let meta = try b.text("#messages .meta")
        XCTAssertTrue(meta.hasPrefix("1000 tokens · ") && meta.contains(" tokens/s · ") && meta.hasSuffix("max_tokens reached"), meta)
        try shot(b, "done")
        let h = try server.health()
        XCTAssertEqual(h["completed"] as? Int, 1, "\(h)")
        XCTAssertEqual(h["active"] as? Int, 0, "\(h)")

        // Reasoning: the page's own renderer shows <think>…</think> as a collapsible block and text as text.
        let r = try b.execute("""
            const el = document.createElement('div');
            render(el, '<think>\\nstep one <b>x</b>\\n</think>\\n\\nthe answer <i>y</i>');
            const d = el.querySelector('details');
            const open = document.createElement('div');
            render(open, '<think>still going');
            return [d ? d.querySelector('summary').textContent : '', d ? d.querySelector('.thought').textContent : '',
                    el.querySelectorAll('b, i').length, el.lastChild.textContent,
                    open.querySelector('summary').textContent];
            """) as? [Any] ?? []
        XCTAssertEqual(r.count, 5)
        if r.count == 5 {
            XCTAssertEqual(r[0] as? String, "Thought")
            XCTAssertEqual(r[1] as? String, "step one <b>x</b>")
            XCTAssertEqual(r[2] as? Int, 0, "model text is never parsed as HTML")
            XCTAssertEqual(r[3] as? String, "the answer <i>y</i>")
            XCTAssertEqual(r[4] as? String, "Thinking…")
        }
    }

    /// #stop during a long reply (max_tokens = the whole context) aborts the stream; the server then cancels the
    /// generation: /health shows no active or queued request and one cancelled.
    func testStopCancelsTheGenerationOnTheServer() throws {
        let b = try launchBrowser()
        defer { b.quit() }
        let server = try ServeProcess()
        defer { server.stop() }
        try open(b, server)
        try setSlider(b, "temperature", 0)
        try setSlider(b, "max_tokens", 32000)
        try b.type("#prompt", goldenUserMessage)
        try b.click("#send")
        try b.wait(timeout: 30, "the reply to start streaming") { try replyState(b).length > 20 }
        var h = try server.health()
        XCTAssertEqual(h["active"] as? Int, 1, "a generation runs while the reply streams: \(h)")
        try shot(b, "before-stop")
        try b.click("#stop")
        try b.wait(timeout: 10, "the reply to show it was stopped") { try replyState(b).state == "stopped" }
        let s = try replyState(b)
        XCTAssertFalse(s.sendDisabled, "#send enabled after stop")
        XCTAssertTrue(s.stopDisabled, "#stop disabled after stop")
        XCTAssertTrue(try b.text("#messages .meta").contains("stopped"))
        try b.wait(timeout: 10, "the server to cancel the generation") {
            h = try server.health()
            return (h["active"] as? Int) == 0 && (h["queued"] as? Int) == 0
        }
        XCTAssertEqual(h["cancelled"] as? Int, 1, "\(h)")
        XCTAssertEqual(h["completed"] as? Int, 0, "\(h)")
        try shot(b, "stopped")
    }

    /// With `--api-key`, the page itself loads without the key; a wrong key typed into #api_key shows the server's
    /// 401 in the page; the right key gets a reply. A user turn holding HTML is shown as text. The next turn sends
    /// the whole conversation.
    func testWrongAPIKeyShowsTheErrorInThePage() throws {
        let b = try launchBrowser()
        defer { b.quit() }
        let server = try ServeProcess(["--api-key", "sk-right"])
        defer { server.stop() }
        try open(b, server)
        try setSlider(b, "max_tokens", 8)
        try b.type("#api_key", "sk-wrong")
        try b.type("#prompt", "hello")
        try b.click("#send")
        try b.wait(timeout: 10, "an error in the page") { try b.count("#messages .error") == 1 }
        let err = try b.text("#messages .error")
        XCTAssertTrue(err.contains("401") && err.contains("Incorrect API key"), err)
        XCTAssertEqual(try b.count("#messages .assistant"), 0, "no reply is left for a refused request")
        let s = try replyState(b)
        XCTAssertFalse(s.sendDisabled); XCTAssertTrue(s.stopDisabled)
        try shot(b, "wrong-key")

        try b.clear("#api_key")
        try b.type("#api_key", "sk-right")
        let html = "<img src=x onerror=\"window.injected=1\"> <b>bold</b>"
        try b.type("#prompt", html)
        try b.click("#send")
        try b.wait(timeout: 30, "a reply with the right key") { try replyState(b).state == "done" }
        XCTAssertEqual(try b.count("#messages .error"), 1, "no new error")
        XCTAssertEqual(try b.execute("return Array.from(document.querySelectorAll('#messages .user')).pop().textContent") as? String, html)
        XCTAssertEqual(try b.count("#messages img, #messages b"), 0, "the user's HTML is shown as text")
        XCTAssertNil(try b.execute("return window.injected === undefined ? null : window.injected"))
        try shot(b, "right-key")

        // A second turn, with a system prompt: the request carries the system prompt, the earlier turn and its
        // reply (not the refused one), the sliders' values and the key.
        try b.execute("""
            window.sent = [];
            const f = window.fetch;
            window.fetch = (url, opts) => { if (opts && opts.body) window.sent.push({ url, auth: opts.headers.Authorization, body: JSON.parse(opts.body) }); return f(url, opts); };
            """)
        try b.type("#system", "Be brief.")
        try b.type("#prompt", "again")
        try b.click("#send")
        try b.wait(timeout: 30, "the second reply") { try b.count("#messages .assistant") == 2 && replyState(b).state == "done" }
        let sent = try b.execute("return window.sent") as? [[String: Any]] ?? []
        XCTAssertEqual(sent.count, 1)
        let req = sent.first ?? [:]
        XCTAssertEqual(req["url"] as? String, "/v1/chat/completions")
        XCTAssertEqual(req["auth"] as? String, "Bearer sk-right")
        let body = req["body"] as? [String: Any] ?? [:]
        let msgs = (body["messages"] as? [[String: Any]] ?? []).map { "\($0["role"] ?? ""): \($0["content"] ?? "")" }
        let firstReply = try b.execute("return document.querySelectorAll('#messages .assistant')[0].textContent") as? String ?? "?"
        XCTAssertEqual(msgs, ["system: Be brief.", "user: \(html)", "assistant: \(firstReply)", "user: again"])
        XCTAssertEqual(body["stream"] as? Bool, true)
        XCTAssertEqual(body["max_tokens"] as? Int, 8)
        XCTAssertEqual(body["temperature"] as? Double, 0.85)
        XCTAssertEqual(body["top_p"] as? Double, 0.85)
        XCTAssertEqual(try server.health()["completed"] as? Int, 2)
        try shot(b, "second-turn")
    }
}
