from conjure.worker_agent.agent import main

main()
