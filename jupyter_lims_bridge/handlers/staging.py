"""``lims/api/staging[/<id>]``: progress of the data downloads, and a retry.

Thin: the jobs live in :class:`~jupyter_lims_bridge.staging.DataStager`. Only
the server's owner may read or retry them (normal Jupyter auth, and XSRF on
the POST like every Jupyter API).
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import AUTH_RESOURCE_STAGING, LimsAPIHandler


class StagingHandler(LimsAPIHandler):
    """``GET lims/api/staging``: every job this server knows of, oldest first."""

    auth_resource = AUTH_RESOURCE_STAGING

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.write_json({"jobs": self.bridge.stager.jobs()})


class StagingJobHandler(LimsAPIHandler):
    """``GET lims/api/staging/<id>``: one job; ``POST``: retry a failed job."""

    auth_resource = AUTH_RESOURCE_STAGING

    @web.authenticated
    @authorized
    def get(self, job_id: str) -> None:
        self.write_json(self.bridge.stager.job(job_id).to_json())

    @web.authenticated
    @authorized
    def post(self, job_id: str) -> None:
        job = self.bridge.stager.retry(job_id)
        self.write_json(job.to_json(), status=202)
