"""The routes of ``rmcli serve``, one :class:`fastapi.APIRouter` per API: ``rembg_api``
(rembg 2.0.86's /api/remove), ``v1_api`` (/v1/remove, /v1/models) and ``operations`` (health,
readiness, metrics, the page and /docs). They get the app's objects through ``dependencies``;
``answer`` runs a cut-out for them and describes their answers."""
