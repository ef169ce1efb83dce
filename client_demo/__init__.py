"""The demo page (index.html, app.js, avatars/) and the Python client, shipped as package data."""
