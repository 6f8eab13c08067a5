"""The bot's tests: handlers, keyboards, the playground, the transport, floods, /forget, token redaction."""
