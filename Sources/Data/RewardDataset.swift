// Reward-model training pairs: MiniMind's DPO jsonl read through the same `.dpo` token cache as `DPODataset`, but
// each side kept whole (not shifted into X/Y): the reward head reads the last non-pad token of the sequence itself.
import Foundation
import Tokenizers

/// Chosen/rejected pairs for a reward model: `{"chosen": [turns], "rejected": [turns]}` per line (roles as given),
/// each side rendered with the chat template and encoded exactly as for DPO (one `.dpo` `TokenCache` serves both
/// stages), truncated to its first `maxLength` ids and right-padded with the pad id (0) to `maxLength` positions.
/// A batch of n pairs has 2n rows `[2n, maxLength]`: rows [0, n) chosen, [n, 2n) rejected. `input_ids` holds the
/// sequence; `loss_mask` is 1 at one position per row, its last non-pad token (the position the reward head reads,
/// `min(length, maxLength) − 1`) and 0 elsewhere; `labels` are unused (0); `maskCount` = rows.
public final class RewardPairDataset: ChatPairDataset, BatchDataset, @unchecked Sendable {
    /// Positions per row: `maxLength` (the whole sequence; DPO's X is one shorter).
    public override var seqLen: Int { maxLength }

    public func rows(forSamples n: Int) -> Int { 2 * n }

    /// The first `maxLength` ids of pair `i`'s chosen (or rejected) side, unpadded.
    public func ids(_ i: Int, rejected: Bool) throws -> [Int32] {
        try renderer.leadingIds(cache, sequence: 2 * i + (rejected ? 1 : 0))
    }

    public func batch(indices: ArraySlice<Int>) throws -> Batch {
        let n = indices.count, T = maxLength
        var b = Batch(batchSize: 2 * n, seqLen: T)
        let pad = renderer.tokenizer.padTokenId
        for (k, idx) in indices.enumerated() {
            for (row, rejected) in [(k, false), (n + k, true)] {
                let s = try ids(idx, rejected: rejected)
                var padded = s
                if padded.count < T { padded += [Int32](repeating: pad, count: T - padded.count) }
                b.inputIds.replaceSubrange(row * T ..< (row + 1) * T, with: padded)
                b.lossMask[row * T + max(s.count - 1, 0)] = 1
            }
        }
        b.maskCount = 2 * n
        return b
    }
}
