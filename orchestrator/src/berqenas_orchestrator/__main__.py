from berqenas_orchestrator.cli import main

main()
