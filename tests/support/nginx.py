"""nginx in front of bot replicas for the tests: the runner lives in `benchmarks.nginx_server`, which
`photobot bench scale` uses too."""

from benchmarks.nginx_server import Nginx, NginxUnavailable, find_nginx, nginx_config

__all__ = ["Nginx", "NginxUnavailable", "find_nginx", "nginx_config"]
