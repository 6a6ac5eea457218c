"""A third-party GraphQL client (Python `gql`, not our code) against the console API of a running
`starling standalone`: it introspects the schema, then runs the README's console operations,
each validated by gql against the introspected schema before it is sent.

Usage: console_client.py BASE_URL OPERATOR_TOKEN
"""

import sys
import uuid

import requests
from gql import Client, gql
from gql.transport.requests import RequestsHTTPTransport


def client(url, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = RequestsHTTPTransport(url=url, headers=headers, timeout=30)
    return Client(transport=transport, fetch_schema_from_transport=True)


def main():
    base, operator = sys.argv[1], sys.argv[2]
    url = f"{base}/console/graphql"
    r = requests.post(
        f"{base}/admin/v1/tenants",
        json={"name": "Acme"},
        headers={"Authorization": f"Bearer {operator}"},
        timeout=30,
    )
    r.raise_for_status()
    tenant = r.json()["id"]
    email = f"olga-{uuid.uuid4().hex[:8]}@acme.test"

    with client(url, operator) as s:
        schema = s.client.schema
        assert schema.query_type.name == "Query", schema
        assert "inviteMember" in schema.mutation_type.fields
        invite = s.execute(
            gql("mutation($t: ID!, $e: String!) { inviteMember(tenantId: $t, email: $e, role: OWNER) { token } }"),
            variable_values={"t": tenant, "e": email},
        )["inviteMember"]["token"]

    with client(url) as s:
        s.execute(
            gql('mutation($i: String!) { acceptInvitation(token: $i, name: "Olga", password: "a long enough password") { account { id } } }'),
            variable_values={"i": invite},
        )
        login = s.execute(
            gql('mutation($e: String!) { login(email: $e, password: "a long enough password") { accessToken refreshToken } }'),
            variable_values={"e": email},
        )["login"]

    with client(url, login["accessToken"]) as s:
        first = s.execute(
            gql("{ viewer { email memberships(first: 5) { edges { node { role tenant { id name apps(first: 5) { edges { node { id name apiKeys(first: 5) { edges { node { id status } } } } } } } } } } } }")
        )
        edges = first["viewer"]["memberships"]["edges"]
        assert first["viewer"]["email"] == email, first
        assert edges[0]["node"]["role"] == "OWNER", first
        assert edges[0]["node"]["tenant"]["id"] == tenant, first
        app = s.execute(
            gql('mutation($t: ID!) { createApp(tenantId: $t, input: {name: "chat"}) { id } }'),
            variable_values={"t": tenant},
        )["createApp"]["id"]
        ep = s.execute(
            gql('mutation($t: ID!, $a: ID!) { createWebhookEndpoint(tenantId: $t, appId: $a, input: {url: "https://acme.test/starling", eventTypes: ["message.created"]}) { secret webhookEndpoint { id } } }'),
            variable_values={"t": tenant, "a": app},
        )["createWebhookEndpoint"]
        assert ep["secret"].startswith("whsec_"), ep
        seen = s.execute(
            gql("query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { usage { period messages monthlyActiveUsers quotas { name limit used percent } } webhookEndpoints(first: 5) { edges { node { id url enabled } } } } } }"),
            variable_values={"t": tenant, "a": app},
        )["tenant"]["app"]
        assert seen["usage"]["messages"] == 0, seen
        assert [e["node"]["id"] for e in seen["webhookEndpoints"]["edges"]] == [ep["webhookEndpoint"]["id"]], seen
    print(f"==> gql client: introspected {len(schema.type_map)} types; README operations ran as {email}")


if __name__ == "__main__":
    main()
