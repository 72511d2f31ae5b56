/* The floor under the W = 1 load: what one 64-byte message each way costs over loopback TCP
 * with nothing but the socket calls (docs/BENCHMARKS.md, "io_uring without IPIs").
 *   gcc -O2 bench/floor/loopback_pingpong.c -o /tmp/pingpong && /tmp/pingpong 100000
 * Two processes ping-pong N messages over one connection (TCP_NODELAY, blocking calls); prints
 * the round trip and each side's CPU (user + system) per send + recv pair. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
static double cpu(struct rusage*r){return r->ru_utime.tv_sec+r->ru_utime.tv_usec/1e6+r->ru_stime.tv_sec+r->ru_stime.tv_usec/1e6;}
int main(int argc,char**argv){int n=atoi(argv[1]);int ls=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);bind(ls,(void*)&a,sizeof a);listen(ls,1);socklen_t l=sizeof a;getsockname(ls,(void*)&a,&l);
 if(fork()==0){int c=socket(AF_INET,SOCK_STREAM,0);connect(c,(void*)&a,sizeof a);int one=1;setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,4);char b[64];for(int i=0;i<n;i++){int g=0;while(g<64){int r=recv(c,b+g,64-g,0);if(r<=0)exit(1);g+=r;}send(c,b,64,0);}exit(0);}
 int s=accept(ls,0,0);int one=1;setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,4);char b[64];memset(b,1,64);struct timespec t0,t1;clock_gettime(CLOCK_MONOTONIC,&t0);struct rusage r0,r1;getrusage(RUSAGE_SELF,&r0);
 for(int i=0;i<n;i++){send(s,b,64,0);int g=0;while(g<64){int r=recv(s,b+g,64-g,0);if(r<=0)exit(1);g+=r;}}
 getrusage(RUSAGE_SELF,&r1);clock_gettime(CLOCK_MONOTONIC,&t1);int st;wait(&st);struct rusage rc;getrusage(RUSAGE_CHILDREN,&rc);
 double wall=(t1.tv_sec-t0.tv_sec)*1e6+(t1.tv_nsec-t0.tv_nsec)/1e3;printf("rtt %.1f us; parent cpu %.2f us per send+recv; child cpu %.2f us per recv+send\n",wall/n,(cpu(&r1)-cpu(&r0))*1e6/n,cpu(&rc)*1e6/n);}
