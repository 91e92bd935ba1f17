"""The status pages of the local API (issue 16): overview, meter pages with a vector diagram and a load
profile, events, tariff reports; server-rendered HTML and SVG, a little script, Russian and English.

:func:`pollerd.web.app.mount` adds the routes to the API's aiohttp app; nothing here runs on import.
"""
