"""sipguard: a SIP caller-ID authentication gateway.

An asyncio back-to-back user agent that sits inline on voice trunks, attributes
every call to the trunk it arrived on, checks the caller ID against the numbers
allocated to that trunk, and relays only calls that pass.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
