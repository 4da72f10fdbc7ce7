"""``python -m jupyter_lims_bridge.demo``: the same as ``jupyter lims-bridge demo``."""

import argparse
import sys

from . import configure_parser, run

parser = argparse.ArgumentParser(prog="python -m jupyter_lims_bridge.demo")
configure_parser(parser)
sys.exit(run(parser.parse_args()))
