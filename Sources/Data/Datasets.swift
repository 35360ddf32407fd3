// Placeholder — the Training helper builds the data pipeline here (jsonl readers, token cache, sampler, batches).
import Tokenizers
