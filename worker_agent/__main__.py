from worker_agent.agent import main

main()
