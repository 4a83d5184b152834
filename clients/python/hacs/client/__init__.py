"""A thin Python SDK over the generated HACS stubs: auth, deadlines, retries.

    async with HacsClient("localhost:8080", api_key=KEY) as hacs:
        reply = await hacs.tenant.GetTenant(GetTenantRequest(name="tenants/st-marys"))

The client exchanges the API key for a token (TenantService.IssueToken),
sends it on every call, and fetches a new one shortly before it expires.
Every call gets a deadline unless it sets one, and calls that fail with
UNAVAILABLE (a restarting pod, a moved connection) are retried with backoff.
"""

from hacs.client.client import HacsClient, HacsClientError
from hacs.client.errors import error_details

__all__ = ["HacsClient", "HacsClientError", "error_details"]
