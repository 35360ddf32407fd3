// Placeholder — the Training helper builds loss heads' wiring, the step loop, checkpoints/resume and metrics here.
import Model
import Datasets
import SwiftMindDistributed
