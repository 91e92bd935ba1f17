"""`pollerd webmeters-key`: enrol a WebMeters api key by SMS and print it as a config line."""

from __future__ import annotations

import argparse
import asyncio
import sys


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://api.webmeters.ru/1.0/", help="API endpoint (default: %(default)s)")
    p.add_argument("--phone", required=True, help="the account's phone number, 10 digits, e.g. 9181234567")
    p.add_argument("--code", help="the SMS code, if already at hand (default: asked for on the terminal)")


def run(args: argparse.Namespace) -> int:
    from ..drivers.webmeters import request_key

    async def ask_code() -> str:
        if args.code:
            return str(args.code)
        # The prompt goes to stderr so that stdout carries only the config line.
        print(f"An SMS with a one-time code was sent to {args.phone}.", file=sys.stderr)
        sys.stderr.write("SMS code: ")
        sys.stderr.flush()
        return await asyncio.to_thread(sys.stdin.readline)

    key = asyncio.run(request_key(args.url, args.phone, ask_code))
    print("# the webmeters account's api key; better kept in api_key_file or api_key_credential")
    print(f'api_key = "{key}"')
    return 0
