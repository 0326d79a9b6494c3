"""The reference for init: what a function importing everything eagerly pays before its first request.

Usage: SUPABASE_URL=... SUPABASE_SERVICE_ROLE_KEY=... python bench/eager_reference.py

The imports a straightforward Lambda on this stack makes at module level (the Supabase client, boto3 for
secrets, the Powertools resolver, logger and metrics, pydantic) and the client it builds at import time.
"""

import os

import boto3  # noqa: F401  (imported for its cost: what an eager function pays)
import pydantic  # noqa: F401
from aws_lambda_powertools import Logger, Metrics  # noqa: F401
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver  # noqa: F401

import supabase

supabase.create_client(os.environ["SUPABASE_URL"], os.environ["SUPABASE_SERVICE_ROLE_KEY"])
