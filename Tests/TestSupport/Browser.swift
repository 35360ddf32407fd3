// A small W3C WebDriver client (https://www.w3.org/TR/webdriver2/) for browser tests: headless Chromium driven
// through `chromedriver` over its HTTP JSON API. Debian packages: `chromium`, `chromium-driver`.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// No browser can be started here: `chromium` or `chromedriver` is not installed (or not executable). `reason`
/// says which and how to install it; tests skip with it (`throw XCTSkip(error.reason)`).
public struct BrowserUnavailable: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

/// A WebDriver command that failed (no such element, a JavaScript error, a timeout of `Browser.wait`, a browser
/// that would not start although both programs are installed). `description` holds chromedriver's message.
public struct BrowserError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Where browser tests write their artifacts (screenshots): `$SWIFTMIND_TEST_ARTIFACTS` when set, else
/// `<package root>/.build/test-artifacts/`. The directory is created on first use.
public enum TestArtifacts {
    public static var directory: String {
        let env = ProcessInfo.processInfo.environment["SWIFTMIND_TEST_ARTIFACTS"] ?? ""
        let d = env.isEmpty ? Fixtures.packageRoot + "/.build/test-artifacts" : env
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    /// `directory/name`, e.g. `path("chat-streaming.png")`.
    public static func path(_ name: String) -> String { directory + "/" + name }
}

/// One headless Chromium session driven through a `chromedriver` child process.
///
/// `launch` starts chromedriver on a free loopback port and opens a session (headless=new, no sandbox — tests run
/// as root —, no GPU, a fresh profile in a temporary directory, no network of its own). Every command is a
/// blocking HTTP call to chromedriver; elements are found by CSS selector each time (no stale references).
/// Each command waits at most 60 s for chromedriver (a page whose script never yields blocks it).
/// `quit()` (also run on deinit) ends the session, stops chromedriver and removes the profile.
///
/// Programs: `$SWIFTMIND_CHROMIUM` / `$SWIFTMIND_CHROMEDRIVER` when set, else `chromium` (or `chromium-browser`,
/// `google-chrome`) and `chromedriver` on `PATH` or in /usr/bin.
public final class Browser {
    private let driver: Process
    private let base: String
    private let sessionId: String
    private let profileDir: String
    private var closed = false

    /// The W3C key of an element reference in JSON.
    private static let elementKey = "element-6066-11e4-a52e-4f735466cecf"

    private init(driver: Process, base: String, sessionId: String, profileDir: String) {
        self.driver = driver; self.base = base; self.sessionId = sessionId; self.profileDir = profileDir
    }

    deinit { quit() }

    /// Starts chromedriver and a headless Chromium whose viewport is `windowWidth` × `height` CSS pixels.
    /// - Throws: `BrowserUnavailable` when chromium or chromedriver is missing; `BrowserError` when chromedriver
    ///   does not answer within 30 s or the browser session cannot be created (the message holds chromedriver's
    ///   reason and the end of its log).
    public static func launch(windowWidth: Int = 1200, height: Int = 900) throws -> Browser {
        let env = ProcessInfo.processInfo.environment
        guard let chromium = findProgram(env["SWIFTMIND_CHROMIUM"], ["chromium", "chromium-browser", "google-chrome"]) else {
            throw BrowserUnavailable(reason: "no Chromium: install the Debian package `chromium` (apt-get install chromium chromium-driver) or set SWIFTMIND_CHROMIUM")
        }
        guard let chromedriver = findProgram(env["SWIFTMIND_CHROMEDRIVER"], ["chromedriver"]) else {
            throw BrowserUnavailable(reason: "no chromedriver: install the Debian package `chromium-driver` (apt-get install chromium-driver) or set SWIFTMIND_CHROMEDRIVER")
        }
        let profile = NSTemporaryDirectory() + "swiftmind-browser-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: profile + "/profile", withIntermediateDirectories: true)
        let logPath = profile + "/chromedriver.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)

        let port = try freePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: chromedriver)
        p.arguments = ["--port=\(port)", "--allowed-ips=127.0.0.1", "--log-path=\(logPath)"]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        // chromedriver must not route its own loopback calls through a proxy.
        var childEnv = env
        for k in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] { childEnv[k] = nil }
        p.environment = childEnv
        try p.run()
        let base = "http://127.0.0.1:\(port)"
        func logTail() -> String {
            let s = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            return String(s.suffix(2000))
        }
        func fail(_ msg: String) -> BrowserError {
            if p.isRunning { p.terminate(); p.waitUntilExit() }
            killProcesses(using: profile)
            try? FileManager.default.removeItem(atPath: profile)
            return BrowserError(msg + "\n--- chromedriver log (end) ---\n" + logTail())
        }

        // Ready when GET /status says so.
        let deadline = Date().addingTimeInterval(30)
        var ready = false
        while Date() < deadline {
            if !p.isRunning { throw fail("chromedriver exited with status \(p.terminationStatus) at startup") }
            if let (_, obj) = try? request("GET", base + "/status", nil, timeout: 2),
               let v = obj["value"] as? [String: Any], (v["ready"] as? Bool) == true { ready = true; break }
            usleep(50_000)
        }
        if !ready { throw fail("chromedriver did not answer on port \(port) within 30 s") }

        let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--user-data-dir=\(profile)/profile", "--window-size=\(windowWidth),\(height)",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--disable-sync", "--disable-component-update",
                    "--no-proxy-server"]
        let caps: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": ["binary": chromium, "args": args] as [String: Any],
        ] as [String: Any]]]
        let status: Int, obj: [String: Any]
        do { (status, obj) = try request("POST", base + "/session", caps, timeout: 60) } catch {
            throw fail("creating the browser session failed: \(error)")
        }
        guard status == 200, let v = obj["value"] as? [String: Any], let sid = v["sessionId"] as? String else {
            throw fail("creating the browser session failed (HTTP \(status)): \(errorMessage(obj))")
        }
        let b = Browser(driver: p, base: base, sessionId: sid, profileDir: profile)
        // --window-size sets the outer window; make the viewport (what screenshots show) the size asked for.
        if let inner = try b.execute("return [window.innerWidth, window.innerHeight, window.outerWidth, window.outerHeight]") as? [Int],
           inner.count == 4, inner[0] != windowWidth || inner[1] != height {
            _ = try b.command("POST", "/window/rect", ["width": windowWidth + inner[2] - inner[0], "height": height + inner[3] - inner[1]])
        }
        return b
    }

    // MARK: commands

    /// Navigates to `url` and waits for the page's load event (WebDriver "Navigate To").
    public func open(_ url: String) throws {
        _ = try command("POST", "/url", ["url": url])
    }

    /// Clicks the first element matching `css` (scrolled into view first; WebDriver "Element Click").
    /// - Throws: `BrowserError` when nothing matches or the element cannot be clicked (hidden, covered, disabled is
    ///   not an error: the click is simply delivered).
    public func click(_ css: String) throws {
        let id = try element(css)
        _ = try command("POST", "/element/\(id)/click", [String: Any]())
    }

    /// Types `text` into the first element matching `css` (keys appended to its current value; WebDriver
    /// "Element Send Keys").
    public func type(_ css: String, _ text: String) throws {
        let id = try element(css)
        _ = try command("POST", "/element/\(id)/value", ["text": text])
    }

    /// Empties the input or textarea matching `css` (WebDriver "Element Clear").
    public func clear(_ css: String) throws {
        let id = try element(css)
        _ = try command("POST", "/element/\(id)/clear", [String: Any]())
    }

    /// The rendered (visible) text of the first element matching `css`, as WebDriver's "Get Element Text" gives it.
    public func text(_ css: String) throws -> String {
        let id = try element(css)
        return (try command("GET", "/element/\(id)/text", nil) as? String) ?? ""
    }

    /// How many elements match `css` (0 when none).
    public func count(_ css: String) throws -> Int {
        let v = try command("POST", "/elements", ["using": "css selector", "value": css])
        return (v as? [Any])?.count ?? 0
    }

    /// Runs `js` as the body of a function in the page (`arguments[i]` are `args`, which must be JSON values) and
    /// returns its `return` value as JSON-decoded Foundation objects (nil for undefined/null). A returned Promise is
    /// awaited. - Throws: `BrowserError` with the JavaScript error.
    @discardableResult
    public func execute(_ js: String, args: [Any] = []) throws -> Any? {
        let v = try command("POST", "/execute/sync", ["script": js, "args": args])
        return v is NSNull ? nil : v
    }

    /// Polls `until` every 50 ms until it returns true. - Throws: `BrowserError` "timed out after N s waiting for
    /// WHAT" when `timeout` seconds pass first, or the error `until` throws.
    public func wait(timeout: Double, _ what: String, until: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if try until() { return }
            if Date() >= deadline { throw BrowserError("timed out after \(timeout) s waiting for \(what)") }
            usleep(50_000)
        }
    }

    /// Saves a PNG of the viewport to `path` (directories created). See `TestArtifacts` for where tests put them.
    public func screenshot(to path: String) throws {
        guard let b64 = try command("GET", "/screenshot", nil) as? String, let data = Data(base64Encoded: b64) else {
            throw BrowserError("screenshot: chromedriver returned no PNG")
        }
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Ends the session (the browser exits), stops chromedriver, kills any process of this session's browser still
    /// running, and removes the temporary profile. Safe to call twice; deinit calls it.
    public func quit() {
        if closed { return }
        closed = true
        _ = try? Browser.request("DELETE", base + "/session/\(sessionId)", nil, timeout: 10)
        if driver.isRunning {
            driver.terminate()
            let deadline = Date().addingTimeInterval(5)
            while driver.isRunning && Date() < deadline { usleep(20_000) }
            if driver.isRunning { kill(driver.processIdentifier, SIGKILL) }
            driver.waitUntilExit()
        }
        Browser.killProcesses(using: profileDir)
        try? FileManager.default.removeItem(atPath: profileDir)
    }

    // MARK: plumbing

    /// SIGKILLs the processes whose command line names `profileDir` — this session's own Chromium, left running
    /// when chromedriver could not end the session (a hung page). Reads /proc (Linux); elsewhere does nothing.
    private static func killProcesses(using profileDir: String) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        let needle = Data(("--user-data-dir=" + profileDir + "/profile").utf8)
        for e in entries {
            guard let pid = Int32(e), pid != getpid(),
                  let cmd = FileManager.default.contents(atPath: "/proc/\(e)/cmdline"), cmd.range(of: needle) != nil else { continue }
            kill(pid, SIGKILL)
        }
    }

    /// The WebDriver id of the first element matching `css`.
    private func element(_ css: String) throws -> String {
        let v: Any
        do { v = try command("POST", "/element", ["using": "css selector", "value": css]) } catch let e as BrowserError {
            throw BrowserError("element '\(css)': \(e.description)")
        }
        guard let d = v as? [String: Any], let id = d[Browser.elementKey] as? String else {
            throw BrowserError("element '\(css)': unexpected answer \(v)")
        }
        return id
    }

    /// Sends one command of this session and returns its `value`. - Throws: `BrowserError` with chromedriver's
    /// error and message when the status is not 200.
    private func command(_ method: String, _ path: String, _ body: Any?) throws -> Any {
        if closed { throw BrowserError("the browser was closed (quit)") }
        let (status, obj) = try Browser.request(method, base + "/session/\(sessionId)" + path, body, timeout: 60)
        guard status == 200 else { throw BrowserError("\(method) \(path): HTTP \(status): \(Browser.errorMessage(obj))") }
        return obj["value"] ?? NSNull()
    }

    private static func errorMessage(_ obj: [String: Any]) -> String {
        guard let v = obj["value"] as? [String: Any] else { return "\(obj)" }
        let err = v["error"] as? String ?? "error"
        let msg = (v["message"] as? String ?? "").split(separator: "\n").prefix(3).joined(separator: " | ")
        return "\(err): \(msg)"
    }

    /// One blocking HTTP/1.1 exchange with chromedriver over a loopback socket (`Connection: close`): status and the
    /// JSON object answered. Not URLSession: swift-corelibs-foundation rejects chromedriver's headers, which have no
    /// space after the colon ("Failed writing header").
    private static func request(_ method: String, _ url: String, _ body: Any?, timeout: Double) throws -> (Int, [String: Any]) {
        guard let u = URLComponents(string: url), let port = u.port else { throw BrowserError("bad URL \(url)") }
        let payload = try body.map { try JSONSerialization.data(withJSONObject: $0) } ?? Data()
        var head = "\(method) \(u.percentEncodedPath) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        if body != nil { head += "Content-Type: application/json; charset=utf-8\r\n" }
        head += "Content-Length: \(payload.count)\r\n\r\n"
        let raw = try exchange(port: port, Array(head.utf8) + Array(payload), timeout: timeout)
        guard let sep = raw.firstRange(of: [13, 10, 13, 10]) else {
            throw BrowserError("\(method) \(url): no HTTP answer (\(raw.count) bytes)") }
        let headText = String(decoding: raw[..<sep.lowerBound], as: UTF8.self)
        let lines = headText.components(separatedBy: "\r\n")
        let parts = lines[0].split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw BrowserError("\(method) \(url): bad status line '\(lines[0])'") }
        var headers: [String: String] = [:]
        for l in lines.dropFirst() {
            if let c = l.firstIndex(of: ":") { headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces) }
        }
        var data = Array(raw[sep.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" { data = dechunk(data) }
        else if let n = headers["content-length"].flatMap(Int.init), n < data.count { data = Array(data[..<n]) }
        let obj = (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any]
            ?? ["value": ["error": "bad answer", "message": String(decoding: data.prefix(500), as: UTF8.self)]]
        return (status, obj)
    }

    /// True once `raw` holds a whole response: the head and Content-Length bytes, or a chunked body's last chunk.
    /// (chromedriver keeps the connection open despite `Connection: close`.)
    private static func complete(_ raw: [UInt8]) -> Bool {
        guard let sep = raw.firstRange(of: [13, 10, 13, 10]) else { return false }
        let head = String(decoding: raw[..<sep.lowerBound], as: UTF8.self).lowercased()
        let bodyCount = raw.count - sep.upperBound
        for line in head.components(separatedBy: "\r\n") {
            if line.hasPrefix("content-length:"), let n = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces)) {
                return bodyCount >= n
            }
            if line.hasPrefix("transfer-encoding:") && line.contains("chunked") {
                return raw.count >= 5 && Array(raw.suffix(5)) == Array("0\r\n\r\n".utf8)
            }
        }
        return false   // no length: the body ends when the server closes
    }

    /// Connects to 127.0.0.1:`port`, writes `bytes`, reads the whole answer (at most `timeout` seconds).
    private static func exchange(port: Int, _ bytes: [UInt8], timeout: Double) throws -> [UInt8] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BrowserError("socket() failed (errno \(errno))") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw BrowserError("connect to chromedriver on port \(port) failed (errno \(errno))") }
        var tv = timeval(tv_sec: .init(timeout), tv_usec: .init((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBufferPointer { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw BrowserError("write to chromedriver failed (errno \(errno))") }
            off += n
        }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBufferPointer { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw BrowserError(errno == EAGAIN || errno == EWOULDBLOCK
                                   ? "chromedriver did not answer within \(timeout) s" : "read from chromedriver failed (errno \(errno))")
            }
            out += buf[0..<n]
            if complete(out) { break }
        }
        return out
    }

    /// The payload of a chunked body.
    private static func dechunk(_ b: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [], i = 0
        while i < b.count {
            guard let eol = b[i...].firstRange(of: [13, 10]) else { break }
            let sizeText = String(decoding: b[i..<eol.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let n = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), n > 0 else { break }
            let start = eol.upperBound
            out += b[start..<min(b.count, start + n)]
            i = start + n + 2
        }
        return out
    }

    /// `override` when it names an executable, else the first of `names` found on `PATH` or in /usr/bin.
    private static func findProgram(_ override: String?, _ names: [String]) -> String? {
        let fm = FileManager.default
        if let o = override, !o.isEmpty { return fm.isExecutableFile(atPath: o) ? o : nil }
        var dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        dirs.append("/usr/bin")
        for n in names { for d in dirs where fm.isExecutableFile(atPath: d + "/" + n) { return d + "/" + n } }
        return nil
    }

    /// A loopback TCP port free at the time of asking (bound to port 0, then released).
    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BrowserError("socket() failed (errno \(errno))") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { ptr -> Bool in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else { throw BrowserError("could not find a free port (errno \(errno))") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
