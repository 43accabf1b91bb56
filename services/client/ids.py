"""Unique prefixes of job ids and package hashes, for every command that takes one.

`livecalc jobs get job-20261123-1233`, `livecalc submit --package 298d13d2 …`, and the
README's shortened form `298d13d2…6032`: the prefix (and, after an ellipsis, the suffix) is
matched against the ids the caller can list (ListJobs / ListPackages answer the caller's
tenant's own objects only, so a prefix never names another tenant's). A full id or hash is used
as it is, without listing. Ambiguous → an error listing the candidates; no match → NotFound.
"""

from __future__ import annotations

import re
from typing import Final

from services.client.sync import Client
from services.common.client import match_prefix

#: A full job id as the gateway makes them (jobs.new_job_id): used as given.
FULL_JOB_ID: Final = re.compile(r"job-\d{8}-\d{6}-[0-9a-f]{8}")
FULL_HASH: Final = re.compile(r"[0-9a-f]{64}")
#: What may be a (shortened) package hash rather than a file name.
HASH_LIKE: Final = re.compile(r"[0-9a-f]{1,64}((…|\.\.\.)[0-9a-f]{0,63})?")


def resolve_job_id(lc: Client, text: str) -> str:
    """The full id of the caller's job that ``text`` names (a unique prefix, or START…END)."""
    if FULL_JOB_ID.fullmatch(text):
        return text
    return match_prefix(text, [j.job_id for j in lc.list_jobs()], "job id")


def resolve_package_hash(lc: Client, text: str) -> str:
    """The full hash of the caller's package that ``text`` names (a unique prefix, or START…END)."""
    text = text.lower()
    if FULL_HASH.fullmatch(text):
        return text
    return match_prefix(text, [p.package_hash for p in lc.list_packages()], "package hash")
