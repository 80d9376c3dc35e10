"""Everything that talks to mosquitto.

The one owner of paho (connection), the dynamic-security admin, the managed
mosquitto process, its TLS material and the clean-up of retained messages.
"""
