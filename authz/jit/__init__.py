"""Just-in-time access: grants a denied user asks for and an approver gives for a bounded time.

`model` holds the values, `store` the grant stores, `service` the workflow's rules, `cache` the
Check's view of a user's grants, `notify` the background sweeper and notifier. The web layer
(`authz.web.grants_api`, `authz.web.jit_pages`) and the CLI (`authz.cli.grants`) call `service`.
"""
