"""The `linkhub` command: where the hub daemon and its web pages are put together.

It sits above hub/ and web/ (the hub never imports the web)."""
