#!/usr/bin/env python3
"""An aiomoqt subscriber of a bounded range, for tests/aiomoqt.rs (draft 14).

A first LATEST_OBJECT subscription learns the group G the track is on.
Then, with `--mode range`, an ABSOLUTE_RANGE subscription from {G+2, 0} to
End Group G+3; with `--mode update`, an ABSOLUTE_START from {G+2, 0},
narrowed by SUBSCRIBE_UPDATE to end after group G+3 once its first object
arrives. Each object of that second subscription is printed as
`object group=G id=O`, then its PUBLISH_DONE as `done status=S streams=N`,
flushed, for the test to check.
"""

import argparse
import asyncio

from aiomoqt.client import MOQTClient
from aiomoqt.track import SubscribedTrack
from aiomoqt.types import FilterType


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
        live = asyncio.get_running_loop().create_future()

        def on_live(msg, size, recv_time_us, group_id=None, subgroup_id=None):
            if not live.done():
                live.set_result(group_id)

        probe = SubscribedTrack(
            session, namespace=args.namespace, trackname=args.track, on_object=on_live
        )
        await probe.subscribe()
        group = await asyncio.wait_for(live, 30)
        first, last = group + 2, group + 3
        print(f"range {first}..{last}", flush=True)

        updated = False
        last_complete = asyncio.Event()

        def on_object(msg, size, recv_time_us, group_id=None, subgroup_id=None):
            nonlocal updated
            print(f"object group={group_id} id={msg.object_id}", flush=True)
            if group_id == last and msg.object_id == args.group_size - 1:
                last_complete.set()
            if args.mode == "update" and not updated:
                updated = True
                # End Group on the wire is the last group plus one.
                session.request_update(
                    track.request_id, start=(first, 0), end_group=last + 1
                )

        def on_done(msg):
            print(f"done status={msg.status_code} streams={msg.stream_count}", flush=True)

        track = SubscribedTrack(
            session,
            namespace=args.namespace,
            trackname=args.track,
            on_object=on_object,
            on_done=on_done,
        )
        if args.mode == "range":
            await track.subscribe(
                filter_type=FilterType.ABSOLUTE_RANGE,
                start_group=first,
                start_object=0,
                end_group=last,
            )
        else:
            await track.subscribe(
                filter_type=FilterType.ABSOLUTE_START, start_group=first, start_object=0
            )
        await asyncio.wait_for(track.wait_closed(), 30)
        # PUBLISH_DONE may come before the last group's stream has ended
        # (its Stream Count says how many to wait for): read it to the end.
        await asyncio.wait_for(last_complete.wait(), 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--draft", type=int, default=14)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--track", required=True)
    parser.add_argument("--mode", choices=["range", "update"], required=True)
    parser.add_argument("--group-size", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
