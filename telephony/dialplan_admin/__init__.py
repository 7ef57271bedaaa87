"""Offline model and checks of the ``dialplan/`` folder admins edit by hand.

``model.parse_folder`` reads the folder into a parsed configuration with
file:line for everything; ``check.check`` verifies it before anything is
applied to the running Asterisk.
"""
