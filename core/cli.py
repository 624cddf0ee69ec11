"""What the project's management commands share."""

import argparse

from django.core.management.base import BaseCommand, CommandParser, DjangoHelpFormatter


class ExamplesHelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's help, with the description's line breaks kept: one example per line."""


class ExamplesCommand(BaseCommand):
    """A command whose `help` ends in examples, laid out as written."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs) -> CommandParser:
        kwargs.setdefault("formatter_class", ExamplesHelpFormatter)
        return super().create_parser(prog_name, subcommand, **kwargs)


def broker_timeout_argument(parser: CommandParser, *, default: float = 10.0) -> None:
    """--broker-timeout, the same for every command that needs the broker at start."""
    parser.add_argument(
        "--broker-timeout",
        type=float,
        default=default,
        help=f"Seconds to wait for the broker at start before giving up (default {default:g}).",
    )
