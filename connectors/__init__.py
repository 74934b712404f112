"""Outbound EHR FHIR clients (SMART Backend Services, retries, paging, incremental pull).

Not built yet: see the connectors issue. Nothing in the gateway imports this package today.
"""
