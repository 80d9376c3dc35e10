"""`linkhub homeassistant`: Home Assistant's login on the hub's broker, and what
to type into its MQTT integration."""

from __future__ import annotations

import argparse
import json

from linkhub import control_client
from linkhub.cli.common import hub_socket, print_table


def home_assistant_command(args: argparse.Namespace) -> int:
    login = control_client.call(hub_socket(args), "POST", "/v1/home-assistant/login", {})
    if args.json:
        print(json.dumps({key: value for key, value in login.items() if key != "fields"}))
        return 0
    print("In Home Assistant: Settings > Devices & services > Add integration > MQTT, then type:")
    print_table([(f"  {label}", value) for label, value in login["fields"]])
    print("Leave discovery on (its prefix: homeassistant). Linked devices then appear by themselves.")
    print("This made a new password: one made before no longer works.")
    return 0
