"""The hub's services: each applies the core's rules to the store and the broker.

A service owns one job (link requests, settings, the outbox to the account
service, households, activity, accounts) and reaches the outside world only
through the interfaces it is given, so the web pages and the MQTT shell call the
same code.
"""
