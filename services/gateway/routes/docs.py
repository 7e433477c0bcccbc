"""GET /openapi.json (built from the routes) and /docs (Swagger UI 5, from the swagger-ui-py wheel). Public.

Every asset is served from this gateway, so the reference works offline, and its "Try it" is same-origin.
"""

import json

from aiohttp import web
from swagger_ui.core import ApplicationDocument
from swagger_ui.handlers.aiohttp import handler as add_swagger_ui

from ..openapi import DOCS_PATH, OPENAPI_PATH, build_openapi

OPENAPI = web.AppKey("openapi", dict)

# Swagger UI's options (JavaScript literals); no validator badge: it would call a public validator.
UI_PARAMETERS = {
    "validatorUrl": "null",
    "layout": '"BaseLayout"',
    "presets": "[SwaggerUIBundle.presets.apis]",
    "defaultModelsExpandDepth": "0",
    "persistAuthorization": "false",
}


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def add_routes(app: web.Application) -> None:
    """Call after every other route is added: the document describes the routes the app has now."""
    app[OPENAPI] = build_openapi(app)
    app.router.add_get(OPENAPI_PATH, openapi_json)
    # config_rel_url: the document is served above, so swagger-ui-py adds no config route of its own
    ui = ApplicationDocument(app, app_type="aiohttp", url_prefix=DOCS_PATH, config_rel_url=OPENAPI_PATH,
                             title="Harmon Storefront API", parameters=UI_PARAMETERS)
    ui.parameters["url"] = json.dumps(OPENAPI_PATH)  # at the root, not under /docs where it would put it
    add_swagger_ui(ui)
