import Foundation

/// Where the tests find their data: `<package root>/Tests/Fixtures/` — the one place every test target looks it up.
///
/// `Tests/Fixtures/README.md` lists every file, its source and licence. The directory is found from this source
/// file's own path (`#filePath`), so tests run from any working directory. Use `golden(_:)`, `corpus(_:)`,
/// `miniMindTokenizer` or `path(_:)`; never a path outside the repository (a fresh clone has nothing beside it).
public enum Fixtures {
    /// The package root (the directory holding `Package.swift`).
    public static let packageRoot: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()   // Tests/TestSupport
        .deletingLastPathComponent()   // Tests
        .deletingLastPathComponent().path

    /// `<package root>/Tests/Fixtures`.
    public static let root: String = packageRoot + "/Tests/Fixtures"

    /// `Tests/Fixtures/<relative>`, e.g. `path("golden/tokenizer/tokenizer_cases.jsonl")`.
    public static func path(_ relative: String) -> String { root + "/" + relative }

    /// `Tests/Fixtures/golden/<relative>`: the PyTorch / Hugging Face goldens, e.g. `golden("model/train_step.safetensors")`.
    public static func golden(_ relative: String) -> String { path("golden/" + relative) }

    /// `Tests/Fixtures/corpus/<file>`: the jsonl corpus in MiniMind's formats, e.g. `corpus("sft.jsonl")`.
    public static func corpus(_ file: String) -> String { path("corpus/" + file) }

    /// MiniMind2's tokenizer directory (`tokenizer.json`, `tokenizer_config.json`).
    public static let miniMindTokenizer: String = path("tokenizers/minimind")
}
