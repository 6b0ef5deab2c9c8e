"""The HTTP surface: the server (guarded protocol, draining shutdown), the middleware every request
passes (timing, error rendering, the request guard), the operator's routes (``/healthz``,
``/readyz``, ``/metrics``), the pass-through of other ``/v1/*`` routes, and the admin API as a
sub-application with its own auth middleware (later the console, the same way).

May import: pipeline and every layer below it, except budget (names its types only): the app
factory (``proxy.app``) plugs budgets in. Nothing imports web but the app and the command line.
"""
