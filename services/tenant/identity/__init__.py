"""Sign-in with a hospital's identity provider: OIDC, LDAP / Active Directory, SAML 2.0.

A tenant administrator registers providers (`IdentityProviders`); a person who signs in
through one is mapped to a HACS actor of the tenant (`Provisioning`: group -> role and
permissions, allowed groups, just-in-time creation within max_users) and gets the same
RS256 HACS token an API key gets. Deprovisioning deactivates the actor, so its tokens end
within the revocation bound.
"""
