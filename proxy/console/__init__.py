"""The operator console at ``/ui/`` (issue 14): cached images, keys and spend, an overview.

An aiohttp sub-application (``console.app.create_console_app``), mounted by the app factory only
when ``PROXY_ADMIN_TOKEN`` is set. Plain server-sent HTML and one static script (no build step,
no inline script: the Content-Security-Policy forbids it); the script renders every tenant string
with ``textContent``. It owns the admin session (``console.sessions``), its guards
(``console.guard``), the JSON the page reads (``console.api``), thumbnails (``console.thumbs``)
and the background flush of the image index and traffic stats (``console.wiring``).

May import: ``proxy.web`` (the admin API's handlers are reused as they are), ``proxy.cache``,
``proxy.obs``, ``proxy.storage`` and below; never budget code (it reaches the budget guard through
``proxy.state`` like the admin API).
"""
