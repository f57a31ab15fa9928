"""Exploration of KDEformer residual estimators (issue 12): a float64 torch model of the
estimators tried beside the paper's, on the GloVe rows and the synthetic regimes of
bench/glove_experiment, with the full n x n logits (so only for n <= 8192). It is how the
directions kept (the Gaussian far field, the denominator floor, the clamp, the mass-calibrated
far field) and dropped (fitted and constant-only control variates, budget splits, the far field
without its variance term or with a low-rank one, per-block zeroth-order far fields, the
second-order far field) were compared; bench/RESULTS.md quotes its figures. The C++
implementation (attention/kdeformer) is the one the benchmarks measure.

usage: .venv/bin/python tools/kdeformer_explore/explore.py REGIME N M1,M2,... [VARIANT,...]
  REGIME: glove | diffuse | peaked | very_peaked; each cell prints pair-wise rel/centered error
  (2 pairs x 2 seeds), b = m * bfrac blocks and the rest samples (variants table below).
"""
import math
import os
import sys

import torch

torch.set_num_threads(2)
D=100
SHARED=os.environ.get('KDESERVE_SHARED_DIR', os.path.join(os.path.dirname(__file__), '../../../shared'))
raw=torch.from_file(os.path.join(SHARED,'data/glove/glove.6B.100d.wink-first49152.f32'),size=49152*D,dtype=torch.float32).view(49152,D)
voff=49152*2//3
def glove(n,p,pairs=3):
    span=max(pairs-1,1); qo=p*(voff-n)//span; vo=voff+p*(49152-voff-n)//span
    return raw[qo:qo+n].double()/10**0.25, raw[vo:vo+n].double()
def synth(regime,n,p):
    sl={'diffuse':3.6,'peaked':8.1,'very_peaked':14.4}[regime]
    g=torch.Generator().manual_seed(1000003*{'diffuse':1,'peaked':2,'very_peaked':3}[regime]+7919*n+p)
    c=torch.randn(32,D,generator=g,dtype=torch.double); w=torch.randint(32,(n,),generator=g)
    q=c[w]+0.7*torch.randn(n,D,generator=g,dtype=torch.double)
    q*=math.sqrt(sl/q.pow(2).sum(1).mean())
    v=torch.randn(n,D,generator=g,dtype=torch.double)+0.5*torch.randn(1,D,generator=g,dtype=torch.double)
    return q,v
def snorm(x): return torch.linalg.matrix_norm(x,ord=2).item()
def inv_gray(g):
    b=g.clone(); s=g>>1
    while s.any(): b^=s; s=s>>1
    return b
def est(q,k,v,b,m,gen,variant):
    n,d=k.shape; nq=q.shape[0]
    r=7
    proj=torch.randn(d,r,generator=gen,dtype=q.dtype)
    pw=2**torch.arange(r)
    def rank(x): return inv_gray(((x@proj>0).long()*pw).sum(1))
    qo=torch.sort(rank(q),stable=True).indices; ko=torch.sort(rank(k),stable=True).indices
    nb=max(1,(n+b-1)//b)  # assume divisible
    bs=n//nb
    kb=torch.empty(n,dtype=torch.long); kb[ko]=torch.arange(n)//bs
    qb=torch.empty(nq,dtype=torch.long); qb[qo]=torch.arange(nq)//(nq//nb)
    S=q@k.T  # prototype: full (only for selection)
    inblk = qb[:,None]==kb[None,:]
    if variant.get('noblk'): inblk=torch.zeros_like(inblk)
    # samples
    vn=(v.pow(2).sum(1)+1).sqrt()
    if variant.get('psamp','vnorm')=='vnorm':
        lam=torch.linalg.matrix_norm(torch.cat([v,torch.ones(n,1,dtype=v.dtype)],1),ord=2)**2
        p=vn/lam+1.0/n
    elif variant['psamp']=='centered':
        vc=v-v.mean(0); p=(vc.pow(2).sum(1)).sqrt()+1e-12
    else: p=torch.ones(n,dtype=v.dtype)
    p=p/p.sum()
    idx=torch.multinomial(p,max(m,1),replacement=True,generator=gen)
    w=1.0/(max(m,1)*p[idx])*(1 if m>0 else 0)
    m=max(m,1)
    Sb=torch.where(inblk,S,torch.tensor(-math.inf,dtype=S.dtype))
    Ss=S[:,idx]; mask=inblk[:,idx]
    c=torch.maximum(Sb.max(1).values, torch.where(mask,-math.inf,Ss).max(1).values if m>0 else Sb.max(1).values)
    eb=torch.exp(Sb-c[:,None])
    Nb=eb@v; Db=eb.sum(1)
    es=torch.exp(Ss-c[:,None])*(~mask)
    cv=variant.get('cv','none')
    if cv=='none':
        Nr=(es*w)@v[idx]; Dr=(es*w).sum(1)
    else:
        kbar=k.mean(0); sbar=q@kbar
        Kc=k-kbar; 
        if cv=='gauss':
            sig2=((q@Kc.T)**2).mean(1)  # exact var for proto; C++: q^T Cov q
            if variant.get('nosig'): sig2=torch.zeros_like(sig2)
            if variant.get('sigr'):
                ev,U=torch.linalg.eigh(Kc.T@Kc/n); U=U[:,-variant['sigr']:]; ev=ev[-variant['sigr']:]
                sig2=((q@U)**2*ev).sum(1)
            a=torch.exp(sbar+sig2/2-c); b0=a; b1=a
            if variant.get('const_only'): b1=torch.zeros_like(a)
        elif cv in ('fit','fitx'):
            # cross-fitted regression of e on x over samples (residual only), weights w
            x=Ss-sbar[:,None]
            half=m//2
            b0=torch.zeros(nq,2,dtype=q.dtype); b1=torch.zeros(nq,2,dtype=q.dtype)
            def fit(sl):
                ww=(w[sl]*(~mask[:,sl])); xx=x[:,sl]; ee=es[:,sl]
                sw=ww.sum(1)+1e-300; mx=(ww*xx).sum(1)/sw; me=(ww*ee).sum(1)/sw
                vx=(ww*(xx-mx[:,None])**2).sum(1)/sw; cxe=(ww*(xx-mx[:,None])*(ee-me[:,None])).sum(1)/sw
                bb1=cxe/(vx+1e-300)
                if cv=='fit' and variant.get('const_only'): bb1=torch.zeros_like(bb1)
                bb0=me-bb1*mx
                return bb0,bb1
            A=slice(0,half); B=slice(half,m)
            f0A,f1A=fit(B); f0B,f1B=fit(A)
        Kv=Kc.T@v  # [D,Dv]
        def parts(bb0,bb1,sl,frac):
            xs=Ss[:,sl]-sbar[:,None]
            f=(bb0[:,None]+bb1[:,None]*xs)*(~mask[:,sl])
            g=(es[:,sl]-f)*w[sl]*frac
            return g@v[idx[sl]], g.sum(1)
        def base(bb0,bb1):
            # sum over all keys of f, minus block keys
            F=bb0[:,None]*v.sum(0)[None,:]+bb1[:,None]*(q@Kv)
            G=bb0*n
            xb=torch.where(inblk,S-sbar[:,None],torch.zeros((),dtype=S.dtype))
            fb=(bb0[:,None]+bb1[:,None]*xb)*inblk
            return F-fb@v, G-fb.sum(1)
        if variant.get('o2'):
            X=S-sbar[:,None]
            def base(bb0,bb1):
                Fm=bb0[:,None]*(1+X+0.5*(X*X-sig2[:,None]))
                F=Fm@v; G=Fm.sum(1)
                fb=Fm*inblk
                return F-fb@v, G-fb.sum(1)
        if cv=='gauss':
            F,G=base(b0,b1); n1,d1=parts(b0,b1,slice(0,m),m/m)
            Nr=F+n1; Dr=G+d1
            if variant.get('mass')=='plain':
                Dr=(es*w).sum(1); Nr=F*(Dr/G)[:,None]
            elif variant.get('mass')=='cv':
                Dr=torch.clamp(Dr,min=0); Nr=F*(Dr/G)[:,None]
        else:
            m2=m-half
            FA,GA=base(f0A,f1A); FB,GB=base(f0B,f1B)
            nA,dA=parts(f0A,f1A,A,m/half); nB,dB=parts(f0B,f1B,B,m/m2)
            Nr=0.5*(FA+nA+FB+nB); Dr=0.5*(GA+dA+GB+dB)
    if variant.get('far'):
        G=variant['far']  # blocks per far-field cluster
        kbf=kb//G; nc=int(kbf.max())+1
        cnt=torch.zeros(nc,dtype=q.dtype).index_add_(0,kbf,torch.ones(n,dtype=q.dtype))
        km=torch.zeros(nc,d,dtype=q.dtype).index_add_(0,kbf,k)/cnt[:,None]
        k2=torch.zeros(nc,d,dtype=q.dtype).index_add_(0,kbf,k*k)/cnt[:,None]-km*km
        vm=torch.zeros(nc,v.shape[1],dtype=q.dtype).index_add_(0,kbf,v)/cnt[:,None]
        lw=q@km.T+0.5*(q*q)@k2.clamp(min=0).T+torch.log(cnt)[None,:]-c[:,None]   # [nq,nc]
        # remove own block's keys: subtract their baseline exactly via per-key terms
        W=torch.exp(lw)
        own=torch.zeros(nq,nc,dtype=torch.bool); 
        # cluster of query's block
        own[torch.arange(nq),torch.clamp(qb//G,max=nc-1)]=True
        # keys in same cluster but not in own block: add exactly? approximate by scaled cluster
        Wn=torch.where(own,torch.zeros((),dtype=q.dtype),W)
        Nr=Wn@vm; Dr=Wn.sum(1)
        if G>1:
            # own cluster minus own block, exactly (cheap prototype)
            samec=(kbf[None,:]==torch.clamp(qb//G,max=nc-1)[:,None])&~inblk
            e_sc=torch.exp(torch.where(samec,S,torch.tensor(-math.inf,dtype=S.dtype))-c[:,None])
            Nr=Nr+e_sc@v; Dr=Dr+e_sc.sum(1)
    N=Nb+Nr; Dd=Db+Dr
    if variant.get('denfloor'):
        Dd=torch.maximum(Dd,Db)
    out=N/Dd[:,None]
    if variant.get('clamp'):
        out=torch.maximum(torch.minimum(out,v.max(0).values),v.min(0).values)
    return out
def errs(out,A,An,Acn):
    d=out-A
    return snorm(d)/An, snorm(d-d.mean(0))/Acn
variants={
 'ff2':{'cv':'gauss','denfloor':1,'clamp':1,'nos':1,'bfrac':1.0,'o2':1},
 'ff_nosig':{'cv':'gauss','denfloor':1,'clamp':1,'nos':1,'bfrac':1.0,'nosig':1},
 'ff_sig8':{'cv':'gauss','denfloor':1,'clamp':1,'nos':1,'bfrac':1.0,'sigr':8},
 'ff_sig16':{'cv':'gauss','denfloor':1,'clamp':1,'nos':1,'bfrac':1.0,'sigr':16},
 'far1':{'denfloor':1,'clamp':1,'nos':1,'bfrac':1.0,'far':1},
 'far4':{'denfloor':1,'clamp':1,'nos':1,'bfrac':1.0,'far':4},
 'mp':{'cv':'gauss','denfloor':1,'clamp':1,'mass':'plain'},
 'mcv':{'cv':'gauss','denfloor':1,'clamp':1,'mass':'cv'},
 'mp34':{'cv':'gauss','denfloor':1,'clamp':1,'mass':'plain','bfrac':0.75},
 'mcv34':{'cv':'gauss','denfloor':1,'clamp':1,'mass':'cv','bfrac':0.75},
 'base':{'cv':'gauss','denfloor':1,'clamp':1,'noblk':1,'nos':1},
 'g_b':{'cv':'gauss','denfloor':1,'clamp':1,'nos':1,'bfrac':1.0},
 'g_b34':{'cv':'gauss','denfloor':1,'clamp':1,'bfrac':0.75},
 'g_b14':{'cv':'gauss','denfloor':1,'clamp':1,'bfrac':0.25},
 'kde':{}, 
 'kde+clamp':{'clamp':1},
 'gauss':{'cv':'gauss','denfloor':1,'clamp':1},
 'gauss0':{'cv':'gauss','const_only':1,'denfloor':1,'clamp':1},
 'fit':{'cv':'fit','denfloor':1,'clamp':1},
 'fit0':{'cv':'fit','const_only':1,'denfloor':1,'clamp':1},
}
if __name__=='__main__':
    regime=sys.argv[1]; n=int(sys.argv[2]); ms=[int(x) for x in sys.argv[3].split(',')]
    sel=sys.argv[4].split(',') if len(sys.argv)>4 else list(variants)
    reps=2
    for p in range(2):
        q,v=glove(n,p) if regime=='glove' else synth(regime,n,p)
        A=torch.softmax(q@q.T,1)@v; An=snorm(A); Acn=snorm(A-A.mean(0))
        fl=errs(v.mean(0,keepdim=True).expand_as(A),A,An,Acn)
        print(f'pair {p} floor {fl[0]:.3f}/{fl[1]:.3f}')
        for mm in ms:
            row=[]
            for name in sel:
                e=[0,0]
                for r in range(reps):
                    gen=torch.Generator().manual_seed(17+1000*p+100000*r)
                    vv=variants[name]; bf=vv.get('bfrac',0.5)
                    bb=max(1,int(mm*bf)); ss=0 if vv.get('nos') else mm-bb
                    o=est(q,q,v,bb,ss,gen,vv)
                    ee=errs(o,A,An,Acn); e[0]+=ee[0]/reps; e[1]+=ee[1]/reps
                row.append(f'{name} {e[0]:.3f}/{e[1]:.3f}')
            print(f' m={mm}: '+'  '.join(row), flush=True)
