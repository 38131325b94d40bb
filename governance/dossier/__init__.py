"""Evidence dossiers: one verifiable document per token version and per deployment period.

`facts` collects what the rooms know (through their service functions), `service` seals
the cited audit entries and renders (`render`: HTML, and PDF through WeasyPrint),
`verify` checks a dossier offline, `views` serves them over HTTP.
"""
