"""Inference on a cluster: the Ray Serve application (`serve_app`, the only module that imports Ray)
and the bot's HTTP client for it (`client`), speaking the JSON of `protocol`.

Nothing on the embedded path imports this package's Ray side: `photobot serve inference` and the tests
do. See docs/architecture.md, "Inference on Ray Serve".
"""
