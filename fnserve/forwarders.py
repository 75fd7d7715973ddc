"""Where a site manager connects when the service runs several forwarders.

The service assigns each endpoint to one forwarder (web_service/forwarder_pool.py) and names
every live one at registration; a site manager whose forwarder goes silent tries the next name
it knows, and whichever forwarder answers sends it on to the right one.
"""

from __future__ import annotations


def next_forwarder(forwarders: list[str], current: str) -> str:
    """The address to try after losing ``current``: the one after it in ``forwarders`` (round
    robin), or ``current`` again if no other is known.

    >>> next_forwarder(["tcp://a:1", "tcp://b:1"], "tcp://a:1")
    'tcp://b:1'
    """
    if current in forwarders:
        i = forwarders.index(current)
        for address in forwarders[i + 1:] + forwarders[:i]:
            if address != current:
                return address
        return current
    return forwarders[0] if forwarders else current
