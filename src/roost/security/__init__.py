"""Who may connect and what each client may do: the password file and its authenticator,
SCRAM (MQTT 5 enhanced authentication), the ACL file, and limits on abuse."""
