"""``python -m benchmarks.peer``: the structure-based SIFT peer (see ``benchmarks.peer.pipeline``)."""

import sys

import tyro

from benchmarks.peer.pipeline import SfmPeer

if __name__ == "__main__":
    sys.exit(tyro.cli(SfmPeer).main())
