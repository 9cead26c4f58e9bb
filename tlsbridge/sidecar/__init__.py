"""`tlsbridge run`: the loop, its timers, the Docker watcher, the HTTP endpoint."""
