// Serving: the inference-facing side of SwiftMind.
// - Engine.swift: `GenerationEngine` (model + tokenizer; synchronous `generate`, and `submit` onto a continuous-
//   batching worker thread used by the server), `GenerationJob` cancellation flags.
// - ChatSession.swift: multi-turn ChatML chat with a history window (`trainer chat`).
// - OpenAIServer.swift: OpenAI-compatible HTTP API on Hummingbird 2 (`trainer serve`).
// - Exporters.swift: Hugging Face directory and GGUF exports (`trainer export`).
// Hugging Face directory import lives in Model (HFImport.swift): `MiniMindModel.load(huggingFaceDirectory:)`.
import Hummingbird
