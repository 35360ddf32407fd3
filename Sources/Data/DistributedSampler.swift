// torch's DistributedSampler semantics over our own seeded generator: which samples each rank reads in an epoch.

/// torch `DistributedSampler` semantics (`shuffle=True`, `drop_last=False`): the epoch's order is a permutation seeded
/// with `seed + epoch`; it is padded by repeating its head to a multiple of `worldSize`; rank `r` takes positions
/// `r, r + W, r + 2W, …`. The permutation comes from our own generator (xoshiro256** seeded by SplitMix64), so it is
/// not torch's `randperm` sequence.
///
/// Resuming: `indices(epoch:startPosition:)` shards only the part of the order from global position `startPosition` on
/// (padded to a multiple of `worldSize`), so a run resumed with another world size continues at the same global sample.
/// With `startPosition == 0` it is exactly the torch layout.
public struct DistributedSampler: Sendable {
    public let datasetSize: Int
    public let worldSize: Int
    public let rank: Int
    public let seed: UInt64
    public let shuffle: Bool

    public init(datasetSize: Int, worldSize: Int, rank: Int, seed: UInt64, shuffle: Bool = true) {
        precondition(worldSize >= 1 && rank >= 0 && rank < worldSize)
        self.datasetSize = datasetSize
        self.worldSize = worldSize
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
    }

    /// The global order of epoch `epoch` (a permutation of `0..<datasetSize`).
    public func order(epoch: Int) -> [Int] {
        var idx = Array(0 ..< datasetSize)
        guard shuffle, datasetSize > 1 else { return idx }
        var rng = Xoshiro256StarStar(seed: seed &+ UInt64(epoch))
        for i in stride(from: datasetSize - 1, to: 0, by: -1) {   // Fisher–Yates
            let j = Int(rng.next(below: UInt64(i + 1)))
            idx.swapAt(i, j)
        }
        return idx
    }

    /// This rank's sample indices for `epoch`, from global position `startPosition` of the epoch's order.
    public func indices(epoch: Int, startPosition: Int = 0) -> [Int] {
        let order = order(epoch: epoch)
        precondition(startPosition >= 0 && startPosition <= order.count)
        var rest = Array(order[startPosition...])
        if rest.isEmpty { return [] }
        let padded = (rest.count + worldSize - 1) / worldSize * worldSize
        var k = 0
        while rest.count < padded { rest.append(order[k % order.count]); k += 1 }
        return Swift.stride(from: rank, to: padded, by: worldSize).map { rest[$0] }
    }

    /// Number of samples each rank gets from `startPosition` on.
    public func numSamples(startPosition: Int = 0) -> Int {
        let r = datasetSize - startPosition
        return r <= 0 ? 0 : (r + worldSize - 1) / worldSize
    }
}
