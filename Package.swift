// swift-tools-version:5.10
// SwiftMind: MiniMind-style LLM training in Swift on OpenBLAS + OpenMPI.
import PackageDescription

// Kernels are built optimised even in debug builds, so golden tests and debugging runs stay fast.
let fast: [SwiftSetting] = [.unsafeFlags(["-O"])]

let package = Package(
    name: "SwiftMind",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "trainer", targets: ["trainer"]),
        .executable(name: "mpi-selftest", targets: ["mpi-selftest"]),
    ],
    // Exact versions, so every machine builds the same code: Package.resolved is not committed (see the README,
    // "Dependency versions"). Raise a version here, on purpose, and say so in the commit.
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        // Already in the graph through Hummingbird; named so the server's connection guard (NIO channel handlers)
        // can import NIOCore and NIOHTTPTypes.
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras", exact: "1.35.2"),
        // SHA-256 of LoRA adapters in merge records.
        .package(url: "https://github.com/apple/swift-crypto", exact: "4.5.2"),
    ],
    targets: [
        // C shims only, no logic.
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),

        // Byte-level BPE: tokenizer.json, encode/decode/train, chat templates.
        .target(name: "Tokenizers", path: "Sources/Tokenizers", swiftSettings: fast),
        // bf16 / GGUF Q8_0 weight formats and their decode kernels (AVX2 chosen at run time, scalar elsewhere).
        .target(name: "CQuant", path: "Sources/CQuant", cSettings: [.unsafeFlags(["-O3"])]),
        // bf16 matrix products on oneDNN (libdnnl-dev) for `--dtype bfloat16` on CPUs with native bf16.
        .target(name: "CDNNL", dependencies: ["CQuant"], path: "Sources/CDNNL", cSettings: [.unsafeFlags(["-O2"])],
                linkerSettings: [.linkedLibrary("dnnl")]),
        // Config, parameter layout, forward/backward kernels, AdamW, safetensors, KV cache.
        .target(name: "Model", dependencies: ["CBLAS", "CQuant", "CDNNL", .product(name: "Crypto", package: "swift-crypto")], path: "Sources/Model", swiftSettings: fast),
        // The token cache of every stage (read through Tokenizers' JSONLReader), masks, sampler, batching.
        .target(name: "Datasets", dependencies: ["Tokenizers"], path: "Sources/Data", swiftSettings: fast),
        // Communicator (MPI | single process), bucketed gradient reducer (bf16 payloads through CQuant's conversions).
        // (Not named `Distributed`: that name is taken by the toolchain's distributed-actors module.)
        .target(name: "SwiftMindDistributed", dependencies: ["CMPI", "CQuant"], path: "Sources/Distributed"),
        // Loss heads, step loop, checkpoints/resume, metrics.
        .target(name: "Training",
                dependencies: ["Model", "Datasets", "Tokenizers", "SwiftMindDistributed",
                               .product(name: "Logging", package: "swift-log")],
                path: "Sources/Training", swiftSettings: fast),
        // Chat sessions, the OpenAI-compatible server (Hummingbird), Hugging Face / GGUF export and HF import.
        .target(name: "Serving",
                dependencies: ["Model", "Tokenizers",
                               .product(name: "Hummingbird", package: "hummingbird"),
                               .product(name: "HummingbirdCore", package: "hummingbird"),
                               .product(name: "NIOCore", package: "swift-nio"),
                               .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                               .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                               .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                               .product(name: "Logging", package: "swift-log")],
                path: "Sources/Serving"),
        // The executable: argument parsing and wiring, nothing else.
        .executableTarget(name: "trainer",
                          dependencies: ["Training", "Model", "Tokenizers", "Datasets", "SwiftMindDistributed", "CBLAS", "Serving",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log")],
                          path: "Sources/trainer"),
        // MPI checks and the overlap measurement of the gradient reducer (run under mpirun by DistributedTests).
        .executableTarget(name: "mpi-selftest", dependencies: ["SwiftMindDistributed", "CBLAS", "CQuant"],
                          path: "Sources/mpi-selftest", swiftSettings: fast),

        // Test helpers shared by the test targets: `Fixtures` (paths into Tests/Fixtures/) and `Python` (optional
        // cross-checks run as a python3 child).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        // epoll for the socket-flood test client (Glibc does not import <sys/epoll.h>).
        .target(name: "CSocketTestSupport", path: "Tests/CSocketTestSupport"),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers", "TestSupport"], path: "Tests/TokenizersTests",
                    exclude: ["python"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Tokenizers", "TestSupport"], path: "Tests/ModelTests",
                    exclude: ["python"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "Tokenizers", "TestSupport"], path: "Tests/DatasetsTests"),
        .testTarget(name: "DistributedTests", dependencies: ["SwiftMindDistributed", "mpi-selftest"], path: "Tests/DistributedTests"),
        .testTarget(name: "ServingTests", dependencies: ["Serving", "Model", "Tokenizers", "trainer", "TestSupport", "CSocketTestSupport", "Datasets",
                                                        .product(name: "NIOCore", package: "swift-nio")], path: "Tests/ServingTests",
                    exclude: ["python"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Datasets", "Model", "Tokenizers", "SwiftMindDistributed", "trainer", "TestSupport"],
                    path: "Tests/TrainingTests"),
    ]
)
