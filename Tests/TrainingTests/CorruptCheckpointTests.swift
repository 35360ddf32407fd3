import XCTest
import TestSupport
import Foundation
@testable import Training
import Model
import Tokenizers

/// Bad input → a clear error naming the file/field, never a runtime trap.
final class CorruptCheckpointTests: ScratchDirTestCase {

    func rawSafeTensors(_ header: [String: Any], body: Int, headerLength: UInt64? = nil, to name: String) throws -> String {
        var h = try JSONSerialization.data(withJSONObject: header)
        while h.count % 8 != 0 { h.append(0x20) }
        var d = Data()
        withUnsafeBytes(of: (headerLength ?? UInt64(h.count)).littleEndian) { d.append(contentsOf: $0) }
        d.append(h); d.append(contentsOf: [UInt8](repeating: 0, count: body))
        let dir = work + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try d.write(to: URL(fileURLWithPath: dir + "/optimizer.safetensors"))
        return dir
    }

    /// C7–C10: the optimizer-state reader goes through the validated SafeTensorsFile.
    func testCorruptOptimizerSafetensorsThrows() throws {
        let good: [String: Any] = ["__metadata__": ["step": "3"],
                                   "exp_avg": ["dtype": "F32", "shape": [2], "data_offsets": [0, 8]],
                                   "exp_avg_sq": ["dtype": "F32", "shape": [2], "data_offsets": [8, 16]]]
        let ok = try rawSafeTensors(good, body: 16, to: "ok")
        XCTAssertEqual(try Checkpoints.readOptimizer(ok, numParameters: 2).step, 3)
        var cases: [(String, [String: Any], UInt64?)] = []
        var rev = good; rev["exp_avg"] = ["dtype": "F32", "shape": [2], "data_offsets": [8, 0]]
        cases.append(("reversed", rev, nil))
        var neg = good; neg["exp_avg"] = ["dtype": "F32", "shape": [2], "data_offsets": [-8, 0]]
        cases.append(("negative", neg, nil))
        var big = good; big["exp_avg"] = ["dtype": "F32", "shape": [Int(1) << 62, 4], "data_offsets": [0, 8]]
        cases.append(("overflow", big, nil))
        cases.append(("hugeheader", good, UInt64.max - 3))
        var negStep = good; negStep["__metadata__"] = ["step": "-99"]
        cases.append(("negstep", negStep, nil))
        for (name, header, hl) in cases {
            let dir = try rawSafeTensors(header, body: 16, headerLength: hl, to: name)
            XCTAssertThrowsError(try Checkpoints.readOptimizer(dir, numParameters: 2), name) {
                XCTAssertTrue("\($0)".contains("optimizer.safetensors"), "\(name): \($0)")
            }
        }
    }

    /// A corrupt but well-formed trainer_state.json is refused with the field named (no range/precondition trap).
    func testCorruptTrainerStateFieldsAreNamed() throws {
        let good = TrainerState(step: 4, epoch: 0, samplePosition: 8, globalSamplesSeen: 8, totalSteps: 10, rngSeed: 1,
                                worldSize: 1, batchSize: 2, accumulationSteps: 1, learningRate: 1e-3, maxSeqLen: 16,
                                dataHash: "x", lastLoss: nil)
        XCTAssertNoThrow(try Checkpoints.validate(good, dir: "D", datasetSize: 20, epochs: 1))
        // Resumed with a larger batch after 9 steps of 1 sample: more steps than batch 8 plans (3), still resumable.
        var grown = good; grown.step = 12; grown.batchSize = 8; grown.samplePosition = 20
        XCTAssertNoThrow(try Checkpoints.validate(grown, dir: "D", datasetSize: 20, epochs: 1))
        var cases: [(TrainerState, String)] = []
        var s = good; s.epoch = 99; cases.append((s, "field epoch"))
        s = good; s.epoch = -1; cases.append((s, "field epoch"))
        s = good; s.samplePosition = -5; cases.append((s, "field sample_position"))
        s = good; s.samplePosition = 21; cases.append((s, "field sample_position"))
        s = good; s.step = -1; cases.append((s, "field step"))
        s = good; s.step = 21; cases.append((s, "field step"))
        s = good; s.batchSize = 0; cases.append((s, "field batch_size"))
        s = good; s.worldSize = -2; cases.append((s, "field world_size"))
        for (st, needle) in cases {
            XCTAssertThrowsError(try Checkpoints.validate(st, dir: "D", datasetSize: 20, epochs: 1)) {
                XCTAssertTrue("\($0)".contains("D: bad checkpoint: " + needle), "\($0)")
            }
        }
    }

    /// Planned steps are computed arithmetically (no loop over 10^12 epochs) and saturate instead of overflowing.
    func testPlannedStepsArithmetic() {
        XCTAssertEqual(StepPlan.plannedSteps(datasetSize: 10, epochs: 3, fromEpoch: 1, position: 4, world: 2,
                                               samplesPerRankPerStep: 2), 1 + 2)
        XCTAssertEqual(StepPlan.plannedSteps(datasetSize: 10, epochs: 1_000_000_000_000, fromEpoch: 0, position: 0, world: 1,
                                               samplesPerRankPerStep: 1), 10_000_000_000_000)
        XCTAssertEqual(StepPlan.plannedSteps(datasetSize: 10, epochs: Int.max, fromEpoch: 0, position: 0, world: 1,
                                               samplesPerRankPerStep: 1), Int.max)
        XCTAssertEqual(StepPlan.plannedSteps(datasetSize: 10, epochs: 2, fromEpoch: 99, position: 0, world: 1,
                                               samplesPerRankPerStep: 1), 0)
    }

}
