"""`python -m covey.alliance.worker`: one alliance member as its own OS process, as `covey alliance run` starts it.

The member's key comes from the environment (`COVEY_PARTICIPANT_KEY`, never the command line, which
other users can list); its private data is loaded here from its partition index and never leaves.
It fetches the alliance's spec from the store by its on-chain hash, then polls the chain and acts
until the alliance completes, logging each action as a JSON line and writing a result file at the end.
Its votes and salts go to a state file under the data directory before they are committed, so a member
restarted with the same key (after a crash or a SIGKILL) reveals what it committed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

KEY_ENV = "COVEY_PARTICIPANT_KEY"
POLL_S = 0.3


def main(argv: list[str] | None = None) -> int:
    """Run one member until its alliance completes; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m covey.alliance.worker", description=__doc__)
    parser.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain")
    parser.add_argument("--alliance", required=True, help="Alliance contract address")
    parser.add_argument("--id", type=int, required=True, help="alliance id")
    parser.add_argument("--index", type=int, required=True, help="this member's partition index")
    parser.add_argument("--config", required=True, help="the run's RunConfig as JSON")
    parser.add_argument("--store", default=None, help="artifact store URL (default: COVEY_HOME/artifacts)")
    parser.add_argument("--result", type=Path, required=True, help="where to write this member's result JSON")
    parser.add_argument("--ready", type=Path, default=None, help="a file to create once loaded and ready to act")
    args = parser.parse_args(argv)
    key = os.environ.get(KEY_ENV)
    if not key:
        print(json.dumps({"error": f"{KEY_ENV} is not set"}), flush=True)
        return 2

    import torch
    from eth_account import Account

    from covey.alliance.client import AllianceClient, Phase
    from covey.alliance.participant import Behaviour, Participant
    from covey.alliance.runner import RunConfig, private_partition
    from covey.alliance.spec import AllianceSpec
    from covey.alliance.state import MemberState
    from covey.chain.chain import Chain
    from covey.config import get_settings
    from covey.errors import CoveyError
    from covey.storage import open_store

    torch.set_num_threads(1)  # several members share the machine's cores
    config = RunConfig.from_json(args.config)
    chain = Chain.from_rpc(args.rpc)
    client = AllianceClient(chain, args.alliance)
    data_dir = get_settings().data_dir
    store = open_store(args.store, data_dir)
    spec = AllianceSpec.from_bytes(store.get(client.alliance(args.id).spec_hash.hex()))
    account = Account.from_key(key)
    participant = Participant(
        account,
        client,
        store,
        args.id,
        private_partition(config, args.index),
        spec,
        behaviour=Behaviour.named(config.behaviours[args.index]),
        privacy=config.privacy(),
        state=MemberState(data_dir, client.address, args.id, account.address),
    )
    log = {"member": participant.address, "index": args.index}
    if args.ready is not None:
        args.ready.touch()
    parent = os.getppid()
    while client.phase(args.id) != Phase.COMPLETE:
        if os.getppid() != parent:  # the coordinator died: nobody will finalise rounds or read our results
            print(json.dumps({**log, "error": "coordinator gone; stopping"}), flush=True)
            return 1
        try:
            for action in participant.act():
                print(json.dumps({**log, "action": action}), flush=True)
        except CoveyError as error:  # a race with a phase change: the next look at the chain decides again
            print(json.dumps({**log, "error": str(error)}), flush=True)
        time.sleep(POLL_S)
    args.result.write_text(json.dumps({**log, "privacySpent": participant.privacy_spent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
