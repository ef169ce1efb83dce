"""The demo page (index.html, app.js, avatars/) and the Python client: installed as ``server.page`` (see pyproject.toml)."""
