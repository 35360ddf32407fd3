// Serving: chat sessions, the OpenAI-compatible HTTP server, exporters and Hugging Face import.
import Hummingbird
