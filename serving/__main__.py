"""`python -m serving [tensorflow_model_server flags]`. Unknown flags are reported and ignored, like the binary."""
import argparse
import sys

from serving import main as server_main


def run(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=server_main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    server_main.add_arguments(parser)
    args, unknown = parser.parse_known_args(argv)
    for item in unknown:
        print(f"unknown argument: {item}", file=sys.stderr)
    return server_main.main(args)


if __name__ == "__main__":
    sys.exit(run())
