"""Photo → answer: decoding, preprocessing, the router, the micro-batching engine, the model store."""
