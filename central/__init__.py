"""The platform side of CONTRACT.md: ingest into PostgreSQL, gap report, access lists, commands.

It runs beside a RabbitMQ cluster (the engine the gateways' MQTT lands on,
see README "The platform side") and reads what the gateways publish through
AMQP queues bound to the MQTT plugin's ``amq.topic`` exchange.
"""
