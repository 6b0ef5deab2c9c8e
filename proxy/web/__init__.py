"""The HTTP surface: server, middleware, route handlers, admin."""
