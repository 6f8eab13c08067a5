"""The serving side's tests: decoding, the digit reader, the router, the engine, LiteRT, the model store."""
