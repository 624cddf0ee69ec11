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
