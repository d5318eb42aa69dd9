"""Workloads that Edged runs as pods' containers: the protocol adapters (``python -m
edgeservice.workloads.modbus --config FILE`` and ``... .opcua``) that bridge field devices to the device
twin over MQTT. :mod:`.adapter` holds what every adapter shares; each protocol module adds a driver."""
