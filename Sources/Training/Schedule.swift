// MiniMind's learning-rate schedule.
import Foundation

/// MiniMind `get_lr` (trainer/train_pretrain.py): lr(s) = lr/10 + lr/2 · (1 + cos(π·s/S)) for the 0-based optimizer
/// step `s` of `S` total steps: 1.1·lr at the start, 0.1·lr at the end.
public func miniMindLearningRate(step: Int, totalSteps: Int, baseLR: Double) -> Double {
    baseLR / 10 + 0.5 * baseLR * (1 + cos(Double.pi * Double(step) / Double(max(totalSteps, 1))))
}
