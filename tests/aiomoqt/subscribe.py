#!/usr/bin/env python3
"""An aiomoqt subscriber for tests/aiomoqt.rs: aiomoqt's own sub_example
counts objects but never shows them, so this one subscribes the same way
(MOQTClient + SubscribedTrack, raw QUIC, any certificate) and prints each
object as `object group=G id=O via=datagram|stream payload=HEX`, flushed, for the test to check.
"""

import argparse
import asyncio

from aiomoqt.client import MOQTClient
from aiomoqt.track import SubscribedTrack


def on_object(msg, size, recv_time_us, group_id=None, subgroup_id=None):
    payload = bytes(msg.payload or b"").hex()
    # aiomoqt hands a datagram's object over with no subgroup.
    via = "datagram" if subgroup_id is None else "stream"
    print(f"object group={group_id} id={msg.object_id} via={via} payload={payload}", flush=True)


async def main(args):
    client = MOQTClient(
        args.host,
        args.port,
        path="",
        use_quic=True,
        verify_tls=False,
        supported_drafts=args.draft,
    )
    async with client.connect() as session:
        await session.client_session_init()
        track = SubscribedTrack(
            session,
            namespace=args.namespace,
            trackname=args.track,
            on_object=on_object,
        )
        await track.subscribe()
        print("subscribed", flush=True)
        await track.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--draft", type=int, default=14)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--track", required=True)
    asyncio.run(main(parser.parse_args()))
